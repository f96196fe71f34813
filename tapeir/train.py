"""placeholder"""
def fit(*a, **k):
    raise NotImplementedError
