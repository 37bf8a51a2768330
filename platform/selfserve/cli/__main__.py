"""``python -m selfserve.cli``: the ``selfserve`` command without its console script."""

from selfserve.cli import main

if __name__ == "__main__":
    main()
