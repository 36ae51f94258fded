"""torch-backend: a PyTorch CPU inference service speaking the Open Inference
Protocol (KServe v2) over HTTP/1.1, with an explicit NNPACK switch.

Only stdlib, torch and numpy are used: the package is pip-installed on the
target hosts from a wheelhouse, offline.
"""

__version__ = "0.1.0"
SERVER_NAME = "torch-backend"
