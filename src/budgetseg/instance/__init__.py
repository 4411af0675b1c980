"""The instance segmentation wing: its task (task.py, RSIS and W-RSIS), the matching of predicted to true objects
(matching.py), decoding the network's steps into instances (decode.py), its metrics (metrics.py, cvppp.py), its
pseudo-label folder (pseudo.py: the only code that writes and reads them) and what `budgetseg predict` writes for
it (outputs.py)."""
