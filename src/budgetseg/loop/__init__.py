"""The practitioner's loop around a run: which images to label (select.py), the pseudo-labels out for correction in
an annotation tool, the likeliest wrong first (export.py, export_html.py, review.py), and a trained network on new
images (predict.py)."""
