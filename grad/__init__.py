"""grad"""
