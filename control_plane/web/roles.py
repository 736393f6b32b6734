"""Who may do what: four roles, each allowed what the ones below it are. Pure.

reader: look. maintainer: promote to staging, archive, alias, roll back. approver:
approve, reject, promote to production. admin: delete.
"""

from __future__ import annotations

from enum import IntEnum

from control_plane.registry.lifecycle import PRODUCTION


class Role(IntEnum):
    READER = 1
    MAINTAINER = 2
    APPROVER = 3
    ADMIN = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def named(cls, name: str) -> Role:
        try:
            return cls[name.strip().upper()]
        except KeyError:
            choices = ", ".join(role.label for role in cls)
            raise ValueError(f"'{name}' is not a role (choose {choices}).") from None


ACTIONS: dict[str, Role] = {
    "promote": Role.MAINTAINER,  # to staging; production needs an approver (`needed_for`)
    "archive": Role.MAINTAINER,
    "rollback": Role.MAINTAINER,
    "alias": Role.MAINTAINER,
    "unalias": Role.MAINTAINER,
    "approve": Role.APPROVER,
    "reject": Role.APPROVER,
    "delete": Role.ADMIN,
}


def needed_for(action: str, stage: str | None = None) -> Role:
    """The least role that may do `action` (promoting to production: an approver's)."""
    if action == "promote" and stage == PRODUCTION:
        return Role.APPROVER
    return ACTIONS[action]


def allows(role: Role | None, action: str, stage: str | None = None) -> bool:
    return role is not None and role >= needed_for(action, stage)
