"""Vault sync: tasks as markdown files with YAML frontmatter in an Obsidian vault that is a git clone.

``render`` says what the files hold (the owned keys, the folder rule, the overview, summary pages),
``files`` writes them safely (no symlinks, whole files), ``git`` runs git off the event loop (the
token, the index.lock policy), ``sync`` is one cycle (:class:`VaultSync`). See docs/vault.md.

Not wired into the server yet. May import ``core``, ``storage`` and the generated protos; not
another domain.
"""

from lobwife_server.vault.render import FOLDER_OF, OVERVIEW_KEYS, OWNED_KEYS, TASKS_DIR, TablePage
from lobwife_server.vault.sync import Skipped, SyncResult, VaultError, VaultSync

__all__ = [
    "FOLDER_OF",
    "OVERVIEW_KEYS",
    "OWNED_KEYS",
    "TASKS_DIR",
    "Skipped",
    "SyncResult",
    "TablePage",
    "VaultError",
    "VaultSync",
]
