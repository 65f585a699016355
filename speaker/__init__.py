"""speaker"""
