"""The model labels what it is sure of: thresholds per class chosen on a round's held-out
predictions for a target precision (plan.py, numpy only), and the run that checks the round
and appends the labels (run.py, through the store)."""
