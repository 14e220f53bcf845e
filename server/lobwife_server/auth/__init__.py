"""Who is calling and what it may do: credentials, roles, the rule table and the dispatcher's auth hook.

- ``policy``: the roles and THE table of rules, one per RPC of the contract (``RULES``).
- ``keys``: lobwife's signing keys (Ed25519) in the state folder, or given as a secret; rotation.
- ``tokens``: the :class:`Identity` of a caller; lobwife-signed JWTs, minted and verified, and the
  cache of verified tokens.
- ``kubernetes``: Kubernetes projected service-account tokens, checked against the cluster's
  OIDC signing keys (JWKS), mapped to a role (namespace/service account) and a pod to its task.
- ``enforcer``: the :class:`~lobwife_server.api.rpc.Authorizer` for ``--auth off|permissive|enforce``,
  and the :class:`TaskDirectory` it asks about tasks (implemented over the task store by the app).
- ``service``: AuthService (MintToken, WhoAmI).
- ``settings``: the ``--auth*`` and ``--k8s-*`` options.

Layering: sits between ``api`` and the domains. May import ``core``, ``storage`` and ``api``; a
domain may import it (for a call's :class:`Identity`); it never imports a domain: what it needs
to know about tasks comes through the :class:`TaskDirectory` protocol.
"""

from __future__ import annotations

from lobwife_server.auth.keys import KeyRing
from lobwife_server.auth.policy import RULES, Role, Rule
from lobwife_server.auth.tokens import DEFAULT_TTL, Identity, mint_from_state_dir

__all__ = ["DEFAULT_TTL", "RULES", "Identity", "KeyRing", "Role", "Rule", "mint_from_state_dir"]
