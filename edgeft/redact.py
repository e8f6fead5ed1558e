"""Credentials in source URLs never leave the process: one redaction rule for everything edgeft writes.

IP cameras are addressed as ``rtsp://user:password@host:554/path``; a line PC's stderr ends in the system
journal and in support tickets, and result files travel further. edgeft therefore opens a stream with the
real URL and writes only its *name*: the URL with its user information replaced by ``***``
(``rtsp://***@host:554/path``), or a name the user gives (``--source-name``). As a second line of defence,
every error and status line edgeft prints passes through :func:`redact_text`.

Credentials can stay out of shell history and recipes: ``${VAR}`` in a URL is replaced by that environment
variable (percent-encoded), and ``EDGEFT_RTSP_PASSWORD`` fills in the password of a URL that names a user
and no password. Ground floor: standard library only.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import quote

from edgeft.errors import ConfigError

PASSWORD_ENV = "EDGEFT_RTSP_PASSWORD"
MASK = "***"

# scheme://  then everything up to the last '@' of the same whitespace-free token: the user information,
# including an unencoded '/' or '@' in a password (over-redacting a path with '@' is the safe side)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)\S*@")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def redact_text(text: str) -> str:
    """``text`` with the user information of every URL in it replaced by ``***``."""
    return _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text)


@dataclass(frozen=True)
class Source:
    """A frame source: ``spec`` is what OpenCV opens (credentials included), ``name`` what edgeft writes."""

    spec: str
    name: str

    def __repr__(self) -> str:  # a Source in a traceback or a log shows its name only
        return f"Source(name={self.name!r})"


def expand(url: str, what: str, environ: os._Environ | dict | None = None) -> str:
    """``url`` with each ``${VAR}`` replaced by the environment's value, percent-encoded (a password may hold '@' or
    '/'); refuses, naming ``what`` (already redacted), a variable that is not set."""
    env = os.environ if environ is None else environ
    missing = [v for v in _VAR.findall(url) if v not in env]
    if missing:
        raise ConfigError(f"{what} names the environment variable {missing[0]}, which is not set; export "
                          f"it (e.g. {missing[0]}=... in the service's environment file) or write the value in the URL")
    return _VAR.sub(lambda m: quote(env[m.group(1)], safe=""), url)


def resolve(spec: str, name: str | None = None, environ: os._Environ | dict | None = None) -> Source:
    """Expand ``${VAR}`` and ``EDGEFT_RTSP_PASSWORD`` in ``spec`` and check its credentials' syntax.

    Raises ConfigError (one line, redacted) for a variable that is unset or credentials whose reserved
    characters are not percent-encoded."""
    env = os.environ if environ is None else environ
    expanded = expand(spec, f"source {name or redact_text(spec)}", env)
    m = re.match(r"(?i)([a-z][a-z0-9+.\-]*://)([^/?#]*)(.*)$", expanded, flags=re.S)
    if m is None:  # a file, a camera index, or a GStreamer pipeline (whose location= may hold a credentialed URL)
        return Source(expanded, name or redact_text(expanded))
    scheme, authority, rest = m.groups()
    if "@" not in authority and "@" in rest.split("?")[0].split("#")[0] and ":" in authority \
            and not authority.rsplit(":", 1)[1].isdigit():  # host:port/path@x is a path with an '@', not a password
        # rtsp://user:pa/ss@host: an unencoded '/' in the password ended the host part early
        raise ConfigError(f"the credentials in source {redact_text(expanded)} contain an unencoded '/'; write it "
                          f"as %2F (and '@' as %40, ':' in the user as %3A), or put the password in {PASSWORD_ENV}")
    if "@" in authority:
        userinfo, host = authority.rsplit("@", 1)
        if "@" in userinfo:
            raise ConfigError(f"the credentials in source {redact_text(expanded)} contain an unencoded '@'; write "
                              f"it as %40 (and '/' as %2F), or put the password in {PASSWORD_ENV}")
        if ":" not in userinfo and env.get(PASSWORD_ENV):
            authority = f"{userinfo}:{quote(env[PASSWORD_ENV], safe='')}@{host}"
            expanded = f"{scheme}{authority}{rest}"
    return Source(expanded, name or redact_text(expanded))
