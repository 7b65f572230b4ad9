package squid

import (
	"errors"
	"fmt"
	"math"
	"net/netip"

	"github.com/oschwald/geoip2-golang/v2"
	"github.com/oschwald/maxminddb-golang/v2"
)

// EarthRadiusKm is the mean Earth radius used for distances.
const EarthRadiusKm = 6371.0088

// Location is a point on the Earth.
type Location struct {
	Latitude  float64 `json:"latitude"`
	Longitude float64 `json:"longitude"`
}

// point is a location as a unit vector, so that the angle between two
// points costs a subtraction, a square root and an arcsine.
type point struct{ x, y, z float64 }

func (l Location) point() point {
	lat, lon := l.Latitude*math.Pi/180, l.Longitude*math.Pi/180
	cl := math.Cos(lat)
	return point{cl * math.Cos(lon), cl * math.Sin(lon), math.Sin(lat)}
}

// chord is half the straight-line distance between two unit vectors:
// sin(θ/2) for their central angle θ. With angleOfChord it is the
// haversine formula in vector form: θ = 2·asin(chord).
func chord(a, b point) float64 {
	dx, dy, dz := a.x-b.x, a.y-b.y, a.z-b.z
	return math.Sqrt(dx*dx+dy*dy+dz*dz) / 2
}

// angleOfChord turns sin(θ/2) back into θ.
func angleOfChord(h float64) float64 {
	if h >= 1 {
		return math.Pi
	}
	return 2 * math.Asin(h)
}

// Haversine is the great-circle distance between two locations, in km.
func Haversine(a, b Location) float64 {
	la1, la2 := a.Latitude*math.Pi/180, b.Latitude*math.Pi/180
	dLat := la2 - la1
	dLon := (b.Longitude - a.Longitude) * math.Pi / 180
	h := math.Sin(dLat/2)*math.Sin(dLat/2) + math.Cos(la1)*math.Cos(la2)*math.Sin(dLon/2)*math.Sin(dLon/2)
	return 2 * EarthRadiusKm * math.Asin(math.Sqrt(min(1, h)))
}

// Locator finds where an IP address is, from a GeoIP2 (or GeoLite2) City
// database.
//
// geoip2 checks that the database is a City database and gives whole
// records (City); Locate, on every query's path, decodes the location and
// nothing else through the same database's maxminddb reader: a full City
// record (names in eight languages) costs several times more.
type Locator struct {
	db *geoip2.Reader
	mm *maxminddb.Reader
}

// OpenLocator opens a GeoIP2/GeoLite2 City database file (memory-mapped).
func OpenLocator(path string) (*Locator, error) {
	db, err := geoip2.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open GeoIP database %s: %w", path, err)
	}
	mm, err := maxminddb.Open(path)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open GeoIP database %s: %w", path, err)
	}
	return newLocator(db, mm, path)
}

// LocatorFromBytes reads a City database held in memory (tests, embedded
// databases). b must not be modified afterwards.
func LocatorFromBytes(b []byte) (*Locator, error) {
	db, err := geoip2.OpenBytes(b)
	if err != nil {
		return nil, fmt.Errorf("read GeoIP database: %w", err)
	}
	mm, err := maxminddb.OpenBytes(b)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("read GeoIP database: %w", err)
	}
	return newLocator(db, mm, "(memory)")
}

func newLocator(db *geoip2.Reader, mm *maxminddb.Reader, name string) (*Locator, error) {
	// City works on City, Enterprise and Country databases; only the first
	// two carry locations.
	if _, err := db.City(netip.IPv4Unspecified()); err != nil {
		_ = db.Close()
		_ = mm.Close()
		return nil, fmt.Errorf("GeoIP database %s (%s) has no city locations: %w", name, db.Metadata().DatabaseType, err)
	}
	return &Locator{db: db, mm: mm}, nil
}

// cityLocation is the part of a City record Locate decodes.
type cityLocation struct {
	Location struct {
		Latitude  *float64 `maxminddb:"latitude"`
		Longitude *float64 `maxminddb:"longitude"`
	} `maxminddb:"location"`
}

// Locate returns the location of addr; ok is false when the database has
// none for it.
func (l *Locator) Locate(addr netip.Addr) (loc Location, ok bool) {
	if l == nil || !addr.IsValid() {
		return Location{}, false
	}
	res := l.mm.Lookup(addr.Unmap())
	if !res.Found() {
		return Location{}, false
	}
	var c cityLocation
	if err := res.Decode(&c); err != nil || c.Location.Latitude == nil || c.Location.Longitude == nil {
		return Location{}, false
	}
	return Location{Latitude: *c.Location.Latitude, Longitude: *c.Location.Longitude}, true
}

// City returns addr's whole GeoIP2 City record (for status pages).
func (l *Locator) City(addr netip.Addr) (*geoip2.City, error) {
	if l == nil {
		return nil, fmt.Errorf("no GeoIP database")
	}
	c, err := l.db.City(addr.Unmap())
	if err != nil {
		return nil, fmt.Errorf("GeoIP lookup of %s: %w", addr, err)
	}
	return c, nil
}

// Close releases the database.
func (l *Locator) Close() error {
	if l == nil {
		return nil
	}
	return errors.Join(l.db.Close(), l.mm.Close())
}
