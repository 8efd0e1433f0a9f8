"""``python -m clip_ebc.cli``: the crowdcount command."""

from . import main

if __name__ == "__main__":
    main()
