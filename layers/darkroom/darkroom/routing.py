"""Which provider routes serve a job: the request's `provider`, else the model's configured chain of routes.

A route is a kind of provider darkroom can call: `openai` (OpenAI's Images API, answering with the images), `gateway`
(a second OpenAI-compatible endpoint: a gateway such as LiteLLM, or another account) or `wavespeed` (WaveSpeedAI,
which takes the job and must be polled). What each route serves and accepts is fact, kept here; which routes a model
uses, in order, is configuration (`PROVIDER_ROUTES`, from the template's `ProviderRoutes`), so an operator moves a
model between providers without a release.

A job's routes are decided once, when it is accepted, and kept on the job: the first that can honour the request
serves it, and the rest are its fallbacks (darkroom.jobs.run moves a job along them only when the route before it
certainly did not generate). A request that names its `provider` is pinned to it: no fallback. A configuration
change never moves a job that is already under way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from darkroom import catalog
from darkroom.errors import FieldError

DEFAULT_ROUTE = "openai"


@dataclass(frozen=True)
class Route:
    name: str
    # Submit, then poll (through the poller state machine), instead of one call that answers with the images.
    asynchronous: bool
    # The catalog models this route serves; None for all of them.
    models: tuple[str, ...] | None = None
    # Request fields the route has no way to honour, when set to anything but the value given here.
    only_defaults: tuple[tuple[str, object], ...] = ()
    # USD per image the provider lists, for routes that report no token usage to price from.
    price_per_image: Decimal | None = None
    # Takes OpenAI's Batch API (`tier: "batch"`, at half the token price).
    batch: bool = False

    def serves(self, model: str) -> bool:
        return model in catalog.MODELS and (self.models is None or model in self.models)


ROUTES: dict[str, Route] = {
    "openai": Route("openai", asynchronous=False, batch=True),
    "gateway": Route("gateway", asynchronous=False),
    # WaveSpeed's gpt-image-2 takes prompt, size, quality and output_format, and renders one image per submission.
    "wavespeed": Route(
        "wavespeed",
        asynchronous=True,
        models=("gpt-image-2",),
        only_defaults=(
            ("n", 1),
            ("output_compression", None),
            ("moderation", "auto"),
            ("complexity", None),
            # Its edit endpoint takes images by URL, and no mask or markup.
            ("mask", None),
            ("markup", None),
            # It answers only when the image is done: no previews.
            ("partial_images", None),
        ),
        price_per_image=Decimal("0.06"),  # WaveSpeed's listed price for gpt-image-2, "from $0.06 per run"
    ),
}


@dataclass(frozen=True)
class RouteConfig:
    """A deployment's routes: which may be used at all (`ENABLED_PROVIDER_ROUTES`), and each model's routes in the
    order they are tried ({model or "*": (route, ...)}, from `PROVIDER_ROUTES`)."""

    enabled: frozenset[str] = frozenset({DEFAULT_ROUTE})
    chains: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def parse(cls, enabled: str, chains: str) -> RouteConfig:
        """From "openai,gateway,wavespeed" and "gpt-image-2=openai|gateway|wavespeed,*=openai". Names of routes
        darkroom does not have are left out (the template's AllowedPatterns refuse them before they deploy); openai
        is always enabled."""
        names = {name.strip() for name in enabled.split(",")} & set(ROUTES)
        pairs: dict[str, tuple[str, ...]] = {}
        for entry in chains.split(","):
            model, _, routes = (part.strip() for part in entry.partition("="))
            known = tuple(dict.fromkeys(r.strip() for r in routes.split("|") if r.strip() in ROUTES))
            if model and known:
                pairs.setdefault(model, known)
        return cls(frozenset(names | {DEFAULT_ROUTE}), pairs)

    def usable(self, route: str, model: str) -> bool:
        return route in self.enabled and ROUTES[route].serves(model)

    def chain(self, model: str) -> tuple[str, ...]:
        """The model's own entry, else `*`, else openai, with the routes that are disabled or do not serve the model
        left out; an entry left with none is passed over, so `*=wavespeed` sends what WaveSpeed serves there and
        everything else to openai."""
        for key in (model, "*"):
            usable = tuple(name for name in self.chains.get(key, ()) if self.usable(name, model))
            if usable:
                return usable
        return (DEFAULT_ROUTE,)


def routes_for(fields: dict[str, object], requested: str | None, config: RouteConfig) -> tuple[str, ...]:
    """The routes a valid request (`route_errors` found nothing wrong with it) may run on, in order: the one it
    names, or the routes of its model's chain that can honour it."""
    if requested is not None:
        return (requested,)
    chain = config.chain(str(fields.get("model", "")))
    return tuple(name for name in chain if not _unhonoured(ROUTES[name], fields)) or chain[:1]


def route_errors(fields: dict[str, object], requested: str | None, config: RouteConfig) -> list[FieldError]:
    """What the chosen route cannot do with this request, each naming its field. `fields` holds the request's
    values by name; a model the catalog does not know is reported elsewhere. Without a `provider`, the request is
    refused only when no route of its model's chain can honour it, with the first route's reasons."""
    model = str(fields.get("model", ""))
    if model not in catalog.MODELS:
        return []
    if requested is not None and requested not in ROUTES:
        return [
            FieldError(
                "provider", "provider_unknown", f"Unknown provider '{requested}'. Known: {', '.join(sorted(ROUTES))}."
            )
        ]
    if requested is not None and requested not in config.enabled:
        enabled = ", ".join(sorted(config.enabled))
        return [
            FieldError(
                "provider", "provider_disabled", f"Provider '{requested}' is not enabled here; enabled: {enabled}."
            )
        ]
    route = ROUTES[routes_for(fields, requested, config)[0]]
    if not route.serves(model):
        served = ", ".join(route.models or ())
        return [
            FieldError(
                "provider",
                "provider_model_not_served",
                f"Provider '{route.name}' does not serve {model}; it serves {served}.",
            )
        ]
    return _unhonoured(route, fields)


def _unhonoured(route: Route, fields: dict[str, object]) -> list[FieldError]:
    if fields.get("tier") == "batch" and not route.batch:
        return [
            FieldError(
                "tier", "provider_not_supported", f"Provider '{route.name}' has no batch tier; only openai does."
            )
        ]
    return [
        FieldError(name, "provider_not_supported", f"Provider '{route.name}' cannot honour {name}; leave it out.")
        if default is None
        else FieldError(name, "provider_not_supported", f"Provider '{route.name}' only takes {name}={default}.")
        for name, default in route.only_defaults
        if fields.get(name, default) != default
    ]
