"""Long work outside the request: the queue (queue.py, huey), the one lifecycle every job
row goes through (runner.py), the jobs themselves (round.py, clustering.py, quality.py) and
the worker processes (workers.py)."""
