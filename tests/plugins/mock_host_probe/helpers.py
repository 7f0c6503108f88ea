"""A second module of the mock-host probe plugin (imported from the plugin's folder)."""


def explode(where: str) -> None:
    raise RuntimeError(f"deliberate failure in {where}")


def shout(data: bytes) -> bytes:
    return data.upper()
