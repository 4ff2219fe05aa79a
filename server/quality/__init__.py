"""Dataset quality: suspected mislabels, near-duplicates, how many labels are enough, and
class balance. Pure computations on arrays, file paths and plain lists, returning
dataclasses; nothing here knows Flask or SQL.

    mislabels.find_mislabels(embeddings, labels)      -> LabelIssues
    duplicates.exact_duplicates(sha256s)              -> list of groups
    duplicates.find_duplicates(fingerprints, ...)     -> DuplicateReport
    sample_size.estimate_learning_curve(x, labels)    -> LearningCurve
    balance.check_balance(labels, split)              -> BalanceReport
"""
