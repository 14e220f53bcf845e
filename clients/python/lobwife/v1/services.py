"""Generated from proto/lobwife/v1 by scripts/gen_protos.py. Do not edit.

Every service of the contract: the one list the server's dispatcher, the typed client and the
docs derive theirs from."""

from google.protobuf.descriptor import ServiceDescriptor

from lobwife.v1 import audits_pb2, auth_pb2, broker_pb2, costs_pb2, jobs_pb2, system_pb2, tasks_pb2

SERVICES: tuple[ServiceDescriptor, ...] = (
    audits_pb2.DESCRIPTOR.services_by_name["AuditService"],
    auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
    broker_pb2.DESCRIPTOR.services_by_name["BrokerService"],
    costs_pb2.DESCRIPTOR.services_by_name["CostService"],
    jobs_pb2.DESCRIPTOR.services_by_name["JobService"],
    system_pb2.DESCRIPTOR.services_by_name["SystemService"],
    tasks_pb2.DESCRIPTOR.services_by_name["TaskService"],
)
SERVICE_NAMES: tuple[str, ...] = tuple(s.full_name for s in SERVICES)
