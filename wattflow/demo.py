"""`make demo`: run the platform's main job on embedded defaults and print where to look."""

from __future__ import annotations

from wattflow.settings import get_settings


def main() -> None:
    settings = get_settings()
    print(f"wattflow home: {settings.home.resolve()}")


if __name__ == "__main__":
    main()
