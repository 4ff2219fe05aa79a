"""Simulated annotators labeling through the running product over HTTP (`activelabel
simulate`): the plan (plan.py), the HTTP client and server processes (live_server.py), the
runs (simulate.py, bulk.py) and the crowd of noisy annotators (annotators.py)."""
