"""bigvgan"""
