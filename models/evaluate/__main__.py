"""``python -m models.evaluate``: parse, evaluate, print."""

from models.evaluate.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
