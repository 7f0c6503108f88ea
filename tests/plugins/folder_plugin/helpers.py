def greeting() -> str:
    return "hello from a helper module"
