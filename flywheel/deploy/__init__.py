"""Deployment: exports with parity checks, the safe controller runtime, its server and client."""

from flywheel.deploy.client import ClientConfig, HandshakeError, RobotClient, RobotSpec, ServerError
from flywheel.deploy.controller import (
    Controller,
    ControllerConfig,
    Decision,
    PolicySlot,
    SwapError,
)
from flywheel.deploy.deployed import DeployedPolicy, load_policy
from flywheel.deploy.export import ExportError, check_parity, export_bundle, load_export
from flywheel.deploy.prepare import PrepareError, Preparer
from flywheel.deploy.robot import EpisodeResult, run_episodes
from flywheel.deploy.server import ControllerServer, ServerConfig, serve_registry

__all__ = [
    "ClientConfig",
    "Controller",
    "ControllerConfig",
    "ControllerServer",
    "Decision",
    "DeployedPolicy",
    "EpisodeResult",
    "ExportError",
    "HandshakeError",
    "PolicySlot",
    "PrepareError",
    "Preparer",
    "RobotClient",
    "RobotSpec",
    "ServerConfig",
    "ServerError",
    "SwapError",
    "check_parity",
    "export_bundle",
    "load_export",
    "load_policy",
    "run_episodes",
    "serve_registry",
]
