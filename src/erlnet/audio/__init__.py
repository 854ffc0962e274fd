"""erlnet.audio"""
