"""``python -m models.evaluation``: parse, evaluate, print."""

from models.evaluation.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
