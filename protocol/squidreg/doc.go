// Package squidreg is the contract for registering squid proxies with the
// hub: a squid's Registration (from a site agent's configuration or
// advertised by the cache host itself), its upstream Kinds and Access
// levels, their parsing and validation, the Advertiser that posts a
// registration to the hub (the agent's "agent squid" mode), the hub's
// AdvertiseResponse, and the LoadMeter that reads a squid's load from its
// cache manager. The hub's registry (hub/squid) and the advertising agent
// both use it.
package squidreg

// Paths of the hub's squid API.
const (
	// PathSquids: GET lists every squid's status; POST takes an
	// advertisement (a Registration; bearer token).
	PathSquids = "/api/v1/squids"
	// PathNearest: GET ranks squids for a client (?n=&kind=&ip=&site=&domain=).
	PathNearest = "/api/v1/squids/nearest"
	// PathWPAD: GET serves the same ranking as a proxy auto-config file.
	PathWPAD = "/wpad.dat"
)
