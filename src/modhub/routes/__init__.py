"""Module routes at run time: a route table swapped atomically, one catch-all route that
dispatches to module workers, and the module routes in the OpenAPI document."""

from modhub.routes.dispatch import (
    Authenticator,
    ConfigSource,
    ModuleConfigs,
    ModuleDispatcher,
    ModuleServices,
    Pool,
    module_router,
)
from modhub.routes.openapi import install_openapi, module_tag, with_module_routes
from modhub.routes.table import (
    CompiledRoute,
    MethodNotAllowed,
    ModuleRoutes,
    RouteTable,
    RouteTableHolder,
    RuntimeFor,
    build_module_routes,
    load_table,
    refresh_module,
)

__all__ = [
    "Authenticator",
    "CompiledRoute",
    "ConfigSource",
    "MethodNotAllowed",
    "ModuleConfigs",
    "ModuleDispatcher",
    "ModuleRoutes",
    "ModuleServices",
    "Pool",
    "RouteTable",
    "RouteTableHolder",
    "RuntimeFor",
    "build_module_routes",
    "install_openapi",
    "load_table",
    "module_router",
    "module_tag",
    "refresh_module",
    "with_module_routes",
]
