"""activelabel's server: the Flask app, the store, the importer, the learner, jobs and CLI."""
