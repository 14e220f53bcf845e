"""Vault sync: tasks as markdown files with YAML frontmatter in an Obsidian vault that is a git clone.

``render`` says what the files hold (the owned keys, the folder rule, the overview, summary pages),
``files`` writes them safely (no symlinks, whole files), ``git`` runs git off the event loop (the
token, the index.lock policy), ``sync`` is one cycle (:class:`VaultSync`), ``pages`` makes the server's
summary pages (costs, open audit findings) and ``runner`` runs cycles in the server. See docs/vault.md.

May import ``core``, ``storage`` and the generated protos; not another domain (their data comes
through ``storage.vault_store``).
"""

from lobwife_server.vault.render import FOLDER_OF, OVERVIEW_KEYS, OWNED_KEYS, TASKS_DIR, Table, TablePage
from lobwife_server.vault.sync import Skipped, SyncResult, VaultError, VaultSync

__all__ = [
    "FOLDER_OF",
    "OVERVIEW_KEYS",
    "OWNED_KEYS",
    "TASKS_DIR",
    "Skipped",
    "SyncResult",
    "Table",
    "TablePage",
    "VaultError",
    "VaultSync",
]
