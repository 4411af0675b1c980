"""Many runs and what they say: the pipeline for several N (sweep.py), RSIS against W-RSIS at equal budgets
(compare.py), tables, plots and picture grids (report.py), and learning curves that say where a budget should go
(advise.py)."""
