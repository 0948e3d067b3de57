"""The production guard: a protection is weakened only on purpose, by name, and health says so.

Each setting below starts silently unsafe for patient data, so the config
refuses it unless an ``insecure_*`` key in ``[security]`` acknowledges it;
an acknowledged one is a warning in health for as long as it holds (the
appliance is then never reported healthy). Test benches and benchmarks set
the keys; an appliance in a hospital should not.

=================================  ========================================
setting                            acknowledgement
=================================  ========================================
encryption.enabled = false         security.insecure_no_encryption
audit.enabled = false              security.insecure_no_audit
security.max_token_ttl_s > 30 days security.insecure_long_token_ttl
security.token_idle_timeout_s = 0  security.insecure_no_token_idle_timeout
=================================  ========================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pacsvault.daemon.errors import ConfigError

if TYPE_CHECKING:
    from pacsvault.daemon.config import Config

__all__ = ["DEFAULT_MAX_TOKEN_TTL_S", "check", "warnings"]

DAY_S = 86400.0
DEFAULT_MAX_TOKEN_TTL_S = 30 * DAY_S
# Whatever is acknowledged, no token lives longer than a year.
LONGEST_TOKEN_TTL_S = 366 * DAY_S


def _weakened(config: Config) -> list[tuple[bool, str, str]]:
    """(weakened?, its acknowledgement key, what it means) for each guarded setting."""
    sec = config.security
    return [
        (not config.encryption.enabled, "insecure_no_encryption",
         "encryption at rest is off (encryption.enabled = false): patient data lies in the clear on the disks"),
        (not config.audit.enabled, "insecure_no_audit",
         "the audit trail is off (audit.enabled = false): accesses to patient data are not recorded"),
        (sec.max_token_ttl_s > DEFAULT_MAX_TOKEN_TTL_S, "insecure_long_token_ttl",
         f"tokens may live {sec.max_token_ttl_s / DAY_S:g} days (security.max_token_ttl_s, over 30)"),
        (sec.token_idle_timeout_s == 0, "insecure_no_token_idle_timeout",
         "tokens have no idle timeout unless asked for (security.token_idle_timeout_s = 0)"),
    ]


def check(config: Config) -> None:
    """Refuses a weakened setting that is not acknowledged; the error names the key to set."""
    sec = config.security
    if not 0 < sec.max_token_ttl_s <= LONGEST_TOKEN_TTL_S:
        raise ConfigError(f"security.max_token_ttl_s must be positive and at most {LONGEST_TOKEN_TTL_S:g} (a year)")
    if sec.token_idle_timeout_s < 0:
        raise ConfigError("security.token_idle_timeout_s must not be negative")
    for weakened, key, meaning in _weakened(config):
        if weakened and not getattr(sec, key):
            raise ConfigError(f"{meaning}; if that is really meant (a test bench, never a hospital), "
                              f"acknowledge it with security.{key} = true")


def warnings(config: Config) -> list[str]:
    """What health reports, as warnings, for every weakened setting in force."""
    return [f"insecure: {meaning} (acknowledged by security.{key})"
            for weakened, key, meaning in _weakened(config) if weakened]
