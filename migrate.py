"""Database migrations: `python migrate.py upgrade|downgrade|current|history [revision]`."""

import argparse
from pathlib import Path

from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parent


def alembic_config(database_url: str | None = None) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    if database_url:
        config.attributes["database_url"] = database_url
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", choices=["upgrade", "downgrade", "current", "history"])
    parser.add_argument("revision", nargs="?", help="target revision (default head / -1)")
    args = parser.parse_args()
    config = alembic_config()
    if args.action == "upgrade":
        command.upgrade(config, args.revision or "head")
    elif args.action == "downgrade":
        command.downgrade(config, args.revision or "-1")
    elif args.action == "current":
        command.current(config, verbose=True)
    else:
        command.history(config, verbose=True)


if __name__ == "__main__":
    main()
