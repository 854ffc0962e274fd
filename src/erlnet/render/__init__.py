"""erlnet.render"""
