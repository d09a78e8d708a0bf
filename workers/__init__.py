"""RQ workers that run upstream turns: `python -m workers` starts one process."""
