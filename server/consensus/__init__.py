"""Consensus as pure functions of votes: the rules that turn an image's answers into its state
(rules.py), the annotator-quality model that weighs votes (annotator_model.py, Dawid-Skene),
and chance-corrected agreement (measures.py). No SQL, no Flask, no torch."""
