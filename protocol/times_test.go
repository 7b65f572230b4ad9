package protocol

import (
	"encoding/binary"
	"reflect"
	"strings"
	"testing"
	"time"
)

// rawFrame frames a CBOR body of any shape as a message of kind k.
func rawFrame(t *testing.T, k Kind, body any) []byte {
	t.Helper()
	b, err := encMode.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	h := []byte{magic[0], magic[1], byte(Version), byte(k), 0, 0, 0, 0}
	binary.BigEndian.PutUint32(h[4:], uint32(len(b)))
	return append(h, b...)
}

// TestDecodeEpochTimes: times sent as CBOR epoch numbers (which the
// decoder takes, though Canopy writes RFC 3339 text) come out in UTC, so a
// decoded message encodes and decodes to itself; years no RFC 3339 text
// can hold are refused, naming the field.
func TestDecodeEpochTimes(t *testing.T) {
	tests := []struct {
		name string
		k    Kind
		body any
		want string // "" means it decodes
	}{
		{"heartbeat before 1970", KindHeartbeat, map[string]any{"seq": 1, "sent_at": -17}, ""},
		{"heartbeat float epoch", KindHeartbeat, map[string]any{"seq": 1, "sent_at": 1.7e9 + 0.25}, ""},
		{"heartbeat in the year 33658", KindHeartbeat, map[string]any{"seq": 1, "sent_at": int64(1e12)}, "heartbeat sent_at is in the year 33658"},
		{"heartbeat before year 0", KindHeartbeat, map[string]any{"seq": 1, "sent_at": int64(-7e10)}, "want 0 to 9999"},
		{"squid list", KindSquids, map[string]any{"upstream": "cvmfs", "at": int64(1e12)}, "squid list at"},
		{"inventory VM", KindInventory, map[string]any{"vms": []any{map[string]any{"id": "a", "created_at": int64(1e12)}}}, "inventory VM 0: created_at"},
		{"inventory VM jobs", KindInventory, map[string]any{"vms": []any{map[string]any{"id": "a", "jobs": map[string]any{"at": int64(-1e12)}}}}, "jobs at"},
		{"inventory storage", KindInventory, map[string]any{"storage": map[string]any{"taken_at": int64(1e12)}}, "storage taken_at"},
		{"delta geo-replication worker", KindInventoryDelta, map[string]any{"seq": 2, "base": 1, "storage": map[string]any{
			"georeps": []any{map[string]any{"workers": []any{map[string]any{"last_synced": int64(1e12)}}}}}}, "worker last_synced"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, m, err := Decode(rawFrame(t, tt.k, tt.body))
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("err = %v, want %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, err := Encode(nil, Version, m)
			if err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			_, m2, err := Decode(b)
			if err != nil || !reflect.DeepEqual(m, m2) {
				t.Fatalf("unstable round trip: %#v vs %#v (%v)", m, m2, err)
			}
		})
	}
}

// TestDecodedTimesAreUTC sets every time in every message kind to a zone
// other than UTC and checks that all of them decode in UTC: a time field
// added later without normalizing it fails here.
func TestDecodedTimesAreUTC(t *testing.T) {
	zone := time.FixedZone("X", 5*3600)
	at := time.Date(2026, 11, 22, 12, 0, 0, 0, zone)
	for _, m := range []Message{Hello{}, Welcome{}, Inventory{}, Command{}, Result{}, Heartbeat{}, Error{}, SquidList{}, InventoryDelta{}, Resync{}} {
		v := reflect.New(reflect.TypeOf(m)).Elem()
		fillTimes(v, at)
		b, err := encMode.Marshal(v.Interface())
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeBody(m.Kind(), b)
		if err != nil {
			// Messages whose required fields the filler leaves empty are
			// still checked for their times: decode them unvalidated.
			got, err = decodeAsKind(m.Kind(), b)
			if err != nil {
				t.Fatalf("%s: %v", m.Kind(), err)
			}
		}
		checkUTC(t, m.Kind().String(), reflect.ValueOf(got))
	}
}

// decodeAsKind decodes and normalizes without validating.
func decodeAsKind(k Kind, b []byte) (Message, error) {
	switch k {
	case KindInventory:
		return decodeAs[Inventory](b)
	case KindInventoryDelta:
		return decodeAs[InventoryDelta](b)
	case KindSquids:
		return decodeAs[SquidList](b)
	case KindHeartbeat:
		return decodeAs[Heartbeat](b)
	}
	var none Message
	return none, nil
}

var timeType = reflect.TypeOf(time.Time{})

// fillTimes sets every time.Time reachable from v to at, giving nil
// pointers and empty slices one element on the way.
func fillTimes(v reflect.Value, at time.Time) {
	switch {
	case v.Type() == timeType:
		v.Set(reflect.ValueOf(at))
	case v.Kind() == reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		fillTimes(v.Elem(), at)
	case v.Kind() == reflect.Slice:
		if v.Len() == 0 {
			v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		}
		for i := range v.Len() {
			fillTimes(v.Index(i), at)
		}
	case v.Kind() == reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fillTimes(v.Field(i), at)
			}
		}
	}
}

// checkUTC fails for any time reachable from v that is not in UTC.
func checkUTC(t *testing.T, path string, v reflect.Value) {
	t.Helper()
	switch {
	case !v.IsValid():
	case v.Type() == timeType:
		if tm := v.Interface().(time.Time); !tm.IsZero() && tm.Location() != time.UTC {
			t.Errorf("%s is in %s, want UTC", path, tm.Location())
		}
	case v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface:
		if !v.IsNil() {
			checkUTC(t, path, v.Elem())
		}
	case v.Kind() == reflect.Slice:
		for i := range v.Len() {
			checkUTC(t, path+"[i]", v.Index(i))
		}
	case v.Kind() == reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				checkUTC(t, path+"."+v.Type().Field(i).Name, v.Field(i))
			}
		}
	}
}
