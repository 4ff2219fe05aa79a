"""The `activelabel` command: `main` groups the commands of main.py (projects, users, export,
serve, demo), rounds.py (worker, retrain, strategies), simulate.py and quality.py (audit)."""
