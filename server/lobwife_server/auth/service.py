"""AuthService: MintToken (admin only, in every mode) and WhoAmI."""

from __future__ import annotations

import logging

import grpc

from lobwife import enums
from lobwife.v1 import auth_pb2
from lobwife_server.api.rpc import CallContext
from lobwife_server.auth.enforcer import Mode, TaskDirectory
from lobwife_server.auth.policy import Role
from lobwife_server.auth.tokens import (
    DEFAULT_TTL,
    MAX_TTL,
    Identity,
    LobwifeTokens,
    check_subject,
    default_subject,
)
from lobwife_server.core.errors import ApiError, failed_precondition, invalid_argument
from lobwife_server.core.validation import parse_task_number

log = logging.getLogger("lobwife.auth")

_ROLE_ENUM = auth_pb2.DESCRIPTOR.enum_types_by_name["Role"]
_TO_PROTO = {Role(name): number for number, name in enums.short_names(_ROLE_ENUM).items() if name is not None}


def role_to_proto(role: Role) -> auth_pb2.Role.ValueType:
    return auth_pb2.Role.ValueType(_TO_PROTO[role])


class AuthService:
    """lobwife.v1.AuthService over the server's signing keys."""

    def __init__(self, mode: Mode, tokens: LobwifeTokens, directory: TaskDirectory) -> None:
        self.mode = mode
        self.tokens = tokens
        self.directory = directory

    async def MintToken(self, req: auth_pb2.MintTokenRequest, ctx: CallContext) -> auth_pb2.MintTokenResponse:
        caller = ctx.identity
        # Checked here as well as by the rule, and in every mode: with auth off or permissive every
        # call gets through, and a token minted then would outlive the switch to enforce.
        if not isinstance(caller, Identity) or caller.role is not Role.ADMIN:
            raise ApiError(
                grpc.StatusCode.PERMISSION_DENIED,
                "minting a token needs an admin credential, whatever the auth mode "
                "(or `lobwife auth mint` on the server's state folder)",
                reason="AUTH_ROLE",
            )
        name = enums.short_name(_ROLE_ENUM, req.role)
        if name is None:
            raise invalid_argument("role", "must be admin, service, task or reader")
        role = Role(name)
        task: int | None = None
        if role is Role.TASK:
            if not req.task_id:
                raise invalid_argument("task_id", "a task token must name its task")
            task = parse_task_number(req.task_id)
            if not await self.directory.is_live(task):
                raise failed_precondition(f"task T{task} does not exist or has ended", reason="TASK_NOT_LIVE")
        elif req.task_id:
            raise invalid_argument("task_id", f"only a task token names a task, not a {role.value} token")
        ttl = DEFAULT_TTL
        if req.HasField("ttl"):
            ttl = req.ttl.seconds + req.ttl.nanos / 1e9
            if not 0 < ttl <= MAX_TTL:
                raise invalid_argument("ttl", f"must be more than 0 and at most {MAX_TTL / 86400:g} days")
        subject = req.subject or None
        if subject is not None:
            why = check_subject(subject)
            if why:
                raise invalid_argument("subject", why)
        token, exp = self.tokens.mint(role, task, subject, ttl)
        kid = self.tokens.ring.current.kid
        resp = auth_pb2.MintTokenResponse(token=token, key_id=kid, subject=subject or default_subject(role, task))
        resp.expires_at.FromNanoseconds(int(exp * 1e9))
        log.info(
            "minted a token",
            extra={
                "role": role.value,
                "subject": resp.subject,
                "task": f"T{task}" if task else None,
                "kid": kid,
                "ttl_seconds": ttl,
                "by": caller.subject,
            },
        )
        return resp

    async def WhoAmI(self, req: auth_pb2.WhoAmIRequest, ctx: CallContext) -> auth_pb2.WhoAmIResponse:
        resp = auth_pb2.WhoAmIResponse(auth_mode=self.mode.value)
        who = ctx.identity
        if isinstance(who, Identity):
            resp.role = role_to_proto(who.role)
            resp.subject = who.subject
            resp.task_id = who.task_ref
            resp.source = who.source.value
            resp.expires_at.FromNanoseconds(int(who.expires_at * 1e9))
        return resp
