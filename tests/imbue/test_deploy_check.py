"""The production settings path: `check --deploy` is clean, secrets come only from the environment,
and nothing secret is committed. Each check runs `manage.py` in a fresh process with its own env."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY", "IMBUE_DEPLOY"}}
    env.update(extra)
    return env


def _deploy_env(**extra: str) -> dict[str, str]:
    production = {
        "IMBUE_DEPLOY": "1",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "imbue.example.org",
        "CSRF_TRUSTED_ORIGINS": "https://imbue.example.org",
    }
    return _env(**{**production, **extra})


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_check_deploy_reports_no_issues_with_production_settings() -> None:
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=_deploy_env())
    print("\n$ IMBUE_DEPLOY=1 SECRET_KEY=... manage.py check --deploy\n" + result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "System check identified no issues (0 silenced)."
    assert "WARNING" not in result.stderr


def test_check_deploy_still_catches_a_weak_secret_key() -> None:
    env = _deploy_env(SECRET_KEY="too-short")
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode != 0
    assert "security.W009" in result.stdout + result.stderr


def test_check_deploy_catches_debug_left_on() -> None:
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=_deploy_env(DEBUG="1"))
    assert result.returncode != 0
    assert "security.W018" in result.stdout + result.stderr


def test_deploy_refuses_to_start_without_a_secret_key_in_the_environment() -> None:
    env = _deploy_env()
    del env["SECRET_KEY"]
    result = _manage("check", env=env)
    assert result.returncode != 0
    assert "IMBUE_DEPLOY=1 needs SECRET_KEY in the environment." in result.stderr


PROBE = """
import json, django
django.setup()
from django.conf import settings as s
from django.test import RequestFactory
from imbue.security import content_security_policy
request = RequestFactory().get("/", secure=True, HTTP_HOST="imbue.example.org")
print(json.dumps({
    "session_secure": s.SESSION_COOKIE_SECURE, "csrf_secure": s.CSRF_COOKIE_SECURE,
    "session_httponly": s.SESSION_COOKIE_HTTPONLY, "session_name": s.SESSION_COOKIE_NAME,
    "csrf_name": s.CSRF_COOKIE_NAME, "hsts": s.SECURE_HSTS_SECONDS,
    "hsts_subdomains": s.SECURE_HSTS_INCLUDE_SUBDOMAINS, "ssl_redirect": s.SECURE_SSL_REDIRECT,
    "proxy_header": s.SECURE_PROXY_SSL_HEADER, "debug": s.DEBUG,
    "csp": content_security_policy(request),
}))
"""


def test_deploy_settings_make_cookies_secure_and_https_strict() -> None:
    env = _deploy_env(DJANGO_SETTINGS_MODULE="imbue.settings")
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=BASE_DIR, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert values["session_secure"] and values["csrf_secure"] and values["session_httponly"]
    assert values["session_name"].startswith("__Host-")
    assert values["csrf_name"].startswith("__Host-")
    assert values["hsts"] >= 31536000 and values["hsts_subdomains"]
    assert values["ssl_redirect"] and values["debug"] is False
    assert values["proxy_header"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    # Behind HTTPS, sockets go over wss only and stray http: subresources are upgraded.
    assert "connect-src 'self' wss://imbue.example.org;" in values["csp"]
    assert "ws://" not in values["csp"] and "upgrade-insecure-requests" in values["csp"]


# --- no secrets in the repository ---------------------------------------------------------------

SECRET_PATTERNS = {
    "OpenAI-style API key": re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_-]{32,}"),
    "AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN (?:RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----"),
    "Django SECRET_KEY literal": re.compile(r"^\s*SECRET_KEY\s*=\s*['\"][^'\"]{8,}['\"]", re.M),
    # Placeholders such as postgresql://imbue:secret@db in .env.example are fine.
    "password in a URL": re.compile(
        r"\b(?:postgres(?:ql)?|redis|amqp)://[^:/\s@]+:(?!(?:secret|password|pass|changeme)@)[^@\s/]+@"
    ),
    "Azure/OpenAI key assignment": re.compile(
        r"(?i)\b(?:api_key|LLM_API_KEY|AZURE_OPENAI_KEY)\s*[=:]\s*['\"]?[A-Za-z0-9]{32,}"
    ),
}


# Known and acceptable: the compose stack's own throwaway database, reachable only inside it.
ALLOWED = {("docker/compose.yaml", "password in a URL")}


def _tracked_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=BASE_DIR, capture_output=True, text=True, check=True
    ).stdout
    return [BASE_DIR / name for name in listed.split("\0") if name]


def test_no_secrets_are_committed() -> None:
    found = []
    files = _tracked_files()
    for path in files:
        if path.suffix in {".png", ".jpg", ".gif", ".ico", ".woff", ".woff2", ".pdf"}:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for name, pattern in SECRET_PATTERNS.items():
            if pattern.search(text) and (str(path.relative_to(BASE_DIR)), name) not in ALLOWED:
                found.append(f"{path.relative_to(BASE_DIR)}: {name}")
    assert found == []
    assert len(files) > 50


def test_local_state_and_env_files_are_not_tracked() -> None:
    names = {str(p.relative_to(BASE_DIR)) for p in _tracked_files()}
    assert not any(n.startswith(".local/") for n in names)
    assert not any(Path(n).name == ".env" or n.endswith("/.env") for n in names)
    assert not any(Path(n).name == "secret_key" for n in names)
