"""The one dispatch path for both transports: the method table and call context (``rpc``), the HTTP
gateway built from the contract's annotations (``gateway``), its JSON codec (``codec``) and limits
(``limits``).

May import ``core`` and ``storage``; never a domain (domains register with it).
"""
