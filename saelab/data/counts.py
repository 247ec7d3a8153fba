"""Token counts written by people: "2M", "500k", "1.5e6", 4096."""

import re

_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}
_FORM = re.compile(r"([0-9]*\.?[0-9]+(?:e[0-9]+)?)([kmgb]?)", re.IGNORECASE)


def parse_token_count(value: "str | int") -> int:
    """A positive whole number of tokens from an int or text such as "2M", "500k", "1.5e6"."""
    if isinstance(value, bool):
        raise ValueError(f"token count {value!r} is not a number")
    if isinstance(value, int):
        count = value
    else:
        match = _FORM.fullmatch(str(value).strip().replace("_", ""))
        if match is None:
            raise ValueError(f"token count {value!r} is not a positive number such as 4096, 500k or 2M")
        count = float(match.group(1)) * _SUFFIXES[match.group(2).lower()]
        if count != int(count):
            raise ValueError(f"token count {value!r} is not a whole number of tokens")
        count = int(count)
    if count <= 0:
        raise ValueError(f"token count {value!r} must be positive")
    return count
