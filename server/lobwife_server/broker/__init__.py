"""The GitHub token broker: the GitHub App client (``github``: App JWT, installation tokens, revocation)
and the token cache with single-flight (``token_cache``).

May import ``core``, ``storage`` and ``api``; not another domain.
"""
