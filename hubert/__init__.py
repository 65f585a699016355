"""hubert"""
