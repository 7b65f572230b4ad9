package openstack

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeCloud is an httptest server on 127.0.0.1 that answers like Keystone,
// Nova, Glance and Neutron do (the JSON shapes recorded from the Zed
// testbed), with per-route overrides for error cases.
type fakeCloud struct {
	t   *testing.T
	srv *httptest.Server

	mu        sync.Mutex
	password  string
	appCred   map[string]string // id -> secret
	appExpiry string            // expires_at of the application credential
	calls     map[string]int    // "METHOD /path" -> count
	inflight  int
	maxFlight int
	override  map[string]http.HandlerFunc
	servers   []map[string]any
	serverGET map[string]map[string]any // GET /servers/{id} bodies
	images    map[string]map[string]any
	imageData map[string][]byte
	lastBoot  map[string]any
	uploadTE  []string // Transfer-Encoding of image uploads
	noImage   bool     // leave Glance out of the catalog
}

const (
	fakeUser    = "canopy"
	fakeProject = "canopy-a"
)

func newFakeCloud(t *testing.T) *fakeCloud {
	return startFakeCloud(t, false)
}

// startFakeCloud starts the fake, over TLS (a self-signed certificate for
// 127.0.0.1) when useTLS is set.
func startFakeCloud(t *testing.T, useTLS bool) *fakeCloud {
	f := &fakeCloud{
		t: t, password: "s3cret-pa55", appCred: map[string]string{},
		calls: map[string]int{}, override: map[string]http.HandlerFunc{},
		serverGET: map[string]map[string]any{},
		images:    map[string]map[string]any{}, imageData: map[string][]byte{},
	}
	if useTLS {
		f.srv = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	} else {
		f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	}
	t.Cleanup(f.srv.Close)
	return f
}

// config is a password Config for the fake with fast retries.
func (f *fakeCloud) config() Config {
	return Config{
		AuthURL: f.srv.URL + "/v3", Username: fakeUser, Password: Secret(f.password), ProjectName: fakeProject,
		RequestTimeout: 5 * time.Second, MaxRetryWait: 20 * time.Millisecond,
	}
}

// on overrides one route ("POST /compute/v2.1/servers").
func (f *fakeCloud) on(route string, h http.HandlerFunc) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.override[route] = h
}

func (f *fakeCloud) count(route string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[route]
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// novaError writes Nova's error body, e.g. {"forbidden": {"code": 403, "message": ...}}.
func novaError(status int, key, msg string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, status, map[string]any{key: map[string]any{"code": status, "message": msg}})
	}
}

func (f *fakeCloud) serve(w http.ResponseWriter, r *http.Request) {
	route := r.Method + " " + r.URL.Path
	f.mu.Lock()
	f.calls[route]++
	h := f.override[route]
	f.inflight++
	f.maxFlight = max(f.maxFlight, f.inflight)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inflight--
		f.mu.Unlock()
	}()
	if h != nil {
		h(w, r)
		return
	}
	switch {
	case route == "POST /v3/auth/tokens":
		f.token(w, r)
	case r.Method == "GET" && strings.HasPrefix(r.URL.Path, "/v3/users/") && strings.Contains(r.URL.Path, "/application_credentials/"):
		id := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
		f.mu.Lock()
		exp := f.appExpiry
		f.mu.Unlock()
		var e any
		if exp != "" {
			e = exp
		}
		writeJSON(w, 200, map[string]any{"application_credential": map[string]any{"id": id, "name": "ac", "expires_at": e, "project_id": "p1"}})
	case route == "GET /compute/v2.1" || route == "GET /compute/v2.1/":
		writeJSON(w, 200, map[string]any{"version": map[string]any{"id": "v2.1", "status": "CURRENT", "version": "2.93", "min_version": "2.1",
			"links": []any{map[string]any{"rel": "self", "href": f.srv.URL + "/compute/v2.1/"}}}})
	case route == "GET /compute/v2.1/flavors/detail":
		writeJSON(w, 200, map[string]any{"flavors": []any{
			map[string]any{"id": "f-tiny", "name": "m1.tiny", "vcpus": 1, "ram": 512, "disk": 1, "os-flavor-access:is_public": true},
			map[string]any{"id": "f-b8", "name": "b8", "vcpus": 8, "ram": 16384, "disk": 80, "os-flavor-access:is_public": true},
		}})
	case route == "GET /compute/v2.1/limits":
		writeJSON(w, 200, map[string]any{"limits": map[string]any{"rate": []any{}, "absolute": map[string]any{
			"maxTotalCores": 800, "maxTotalRAMSize": 1638400, "maxTotalInstances": 100,
			"totalCoresUsed": 9, "totalRAMUsed": 16896, "totalInstancesUsed": 2}}})
	case route == "GET /compute/v2.1/servers/detail":
		f.mu.Lock()
		list := f.servers
		f.mu.Unlock()
		writeJSON(w, 200, map[string]any{"servers": list})
	case route == "POST /compute/v2.1/servers":
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			novaError(400, "badRequest", "bad json")(w, r)
			return
		}
		f.mu.Lock()
		f.lastBoot = body
		f.mu.Unlock()
		writeJSON(w, 202, map[string]any{"server": map[string]any{"id": "srv-new", "links": []any{}, "OS-DCF:diskConfig": "MANUAL",
			"security_groups": []any{map[string]any{"name": "default"}}, "adminPass": "xyz"}})
	case r.Method == "GET" && strings.HasPrefix(r.URL.Path, "/compute/v2.1/servers/"):
		id := strings.TrimPrefix(r.URL.Path, "/compute/v2.1/servers/")
		f.mu.Lock()
		s, ok := f.serverGET[id]
		f.mu.Unlock()
		if !ok {
			novaError(404, "itemNotFound", "Instance "+id+" could not be found.")(w, r)
			return
		}
		writeJSON(w, 200, map[string]any{"server": s})
	case r.Method == "DELETE" && strings.HasPrefix(r.URL.Path, "/compute/v2.1/servers/"):
		w.WriteHeader(204)
	case route == "GET /image/" || route == "GET /image":
		// Glance's version document (300 Multiple Choices).
		writeJSON(w, 300, map[string]any{"versions": []any{map[string]any{"id": "v2.16", "status": "CURRENT",
			"links": []any{map[string]any{"rel": "self", "href": f.srv.URL + "/image/v2/"}}}}})
	case route == "GET /network/" || route == "GET /network":
		writeJSON(w, 200, map[string]any{"versions": []any{map[string]any{"id": "v2.0", "status": "CURRENT",
			"links": []any{map[string]any{"rel": "self", "href": f.srv.URL + "/network/v2.0/"}}}}})
	case route == "GET /network/v2.0/networks":
		name := r.URL.Query().Get("name")
		var nets []any
		if name == "canopy-net" {
			nets = append(nets, map[string]any{"id": "11111111-2222-3333-4444-555555555555", "name": name, "status": "ACTIVE", "shared": true})
		}
		writeJSON(w, 200, map[string]any{"networks": nets})
	default:
		f.glance(w, r)
	}
}

func (f *fakeCloud) glance(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/image/v2/images")
	id, sub, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.Method == "GET" && path == "":
		var list []any
		for _, im := range f.images {
			if n := r.URL.Query().Get("name"); n != "" && im["name"] != n {
				continue
			}
			list = append(list, im)
		}
		writeJSON(w, 200, map[string]any{"images": list, "schema": "/v2/schemas/images", "first": "/v2/images"})
	case r.Method == "POST" && path == "":
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		id := fmt.Sprintf("00000000-0000-0000-0000-%012d", len(f.images)+1)
		body["id"], body["status"], body["visibility"] = id, "queued", "shared"
		body["created_at"] = "2026-11-22T15:00:00Z"
		f.images[id] = body
		writeJSON(w, 201, body)
	case r.Method == "PUT" && sub == "file":
		im, ok := f.images[id]
		if !ok {
			http.Error(w, "404 Not Found", 404)
			return
		}
		f.uploadTE = append(f.uploadTE, strings.Join(r.TransferEncoding, ","))
		f.mu.Unlock()
		data, err := io.ReadAll(r.Body)
		f.mu.Lock()
		if err != nil {
			http.Error(w, "read", 400)
			return
		}
		f.imageData[id] = data
		im["status"], im["size"] = "active", len(data)
		im["checksum"] = md5hex(data)
		im["os_hash_algo"], im["os_hash_value"] = "sha512", sha512hex(data)
		w.WriteHeader(204)
	case r.Method == "GET" && sub == "file":
		data, ok := f.imageData[id]
		if !ok {
			w.WriteHeader(204)
			return
		}
		w.Header().Set("Content-MD5", f.images[id]["checksum"].(string))
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(data)
	case r.Method == "GET" && sub == "":
		im, ok := f.images[id]
		if !ok {
			http.Error(w, "404 Not Found\n\nNo image found with ID "+id, 404)
			return
		}
		writeJSON(w, 200, im)
	case r.Method == "DELETE" && sub == "":
		delete(f.images, id)
		delete(f.imageData, id)
		w.WriteHeader(204)
	default:
		http.Error(w, "404 Not Found: "+r.Method+" "+r.URL.Path, 404)
	}
}

// token answers POST /v3/auth/tokens like Keystone.
func (f *fakeCloud) token(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Auth struct {
			Identity struct {
				Methods  []string `json:"methods"`
				Password struct {
					User struct {
						Name     string `json:"name"`
						Password string `json:"password"`
					} `json:"user"`
				} `json:"password"`
				AppCred struct {
					ID     string `json:"id"`
					Secret string `json:"secret"`
				} `json:"application_credential"`
			} `json:"identity"`
		} `json:"auth"`
	}
	raw, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(raw, &req); err != nil {
		writeJSON(w, 400, map[string]any{"error": map[string]any{"code": 400, "title": "Bad Request", "message": "bad json"}})
		return
	}
	id := req.Auth.Identity
	f.mu.Lock()
	okPw := id.Password.User.Name == fakeUser && id.Password.User.Password == f.password
	okAC := id.AppCred.ID != "" && f.appCred[id.AppCred.ID] == id.AppCred.Secret
	f.mu.Unlock()
	if !okPw && !okAC {
		// A hostile or buggy server that echoes the request: the driver
		// must still not put the secret in its error.
		writeJSON(w, 401, map[string]any{"error": map[string]any{"code": 401, "title": "Unauthorized",
			"message": "The request you have made requires authentication. Request was: " + string(raw)}})
		return
	}
	u := f.srv.URL
	ep := func(typ, url string) map[string]any {
		return map[string]any{"type": typ, "name": typ, "id": typ, "endpoints": []any{
			map[string]any{"id": typ + "-pub", "interface": "public", "region": "RegionOne", "region_id": "RegionOne", "url": url}}}
	}
	tok := map[string]any{
		"methods": id.Methods, "expires_at": "2099-01-01T00:00:00.000000Z", "issued_at": "2026-11-22T15:00:00.000000Z",
		"user":    map[string]any{"id": "u1", "name": fakeUser, "domain": map[string]any{"id": "default", "name": "Default"}, "password_expires_at": nil},
		"project": map[string]any{"id": "p1", "name": fakeProject, "domain": map[string]any{"id": "default", "name": "Default"}},
		"roles":   []any{map[string]any{"id": "r1", "name": "member"}},
		"catalog": []any{ep("compute", u+"/compute/v2.1"), ep("network", u+"/network"), ep("identity", u+"/v3")},
	}
	if !f.noImage {
		tok["catalog"] = append(tok["catalog"].([]any), ep("image", u+"/image"))
	}
	if okAC {
		tok["application_credential"] = map[string]any{"id": id.AppCred.ID, "name": "ac", "restricted": true}
	}
	w.Header().Set("X-Subject-Token", fmt.Sprintf("tok-%d", time.Now().UnixNano()))
	writeJSON(w, 201, map[string]any{"token": tok})
}

// server is one entry of GET /servers/detail at microversion 2.47.
func server(id, name, status string, md map[string]string) map[string]any {
	return map[string]any{
		"id": id, "name": name, "status": status, "tenant_id": "p1", "user_id": "u1",
		"created": "2026-11-22T15:01:02Z", "updated": "2026-11-22T15:01:05Z",
		"flavor":   map[string]any{"original_name": "m1.tiny", "vcpus": 1, "ram": 512, "disk": 1, "ephemeral": 0, "swap": 0, "extra_specs": map[string]any{}},
		"image":    map[string]any{"id": "img-1", "links": []any{}},
		"metadata": md, "addresses": map[string]any{}, "links": []any{},
		"OS-EXT-STS:task_state": nil, "OS-EXT-STS:vm_state": strings.ToLower(status), "OS-EXT-STS:power_state": 1,
	}
}
