"""Images in and labels out: checking and reading image files (imaging.py), importing a folder
(importer.py), what an export holds (selection.py) and the export formats (exporter.py), and
the demo's digits (demo.py)."""
