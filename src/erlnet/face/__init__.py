"""erlnet.face"""
