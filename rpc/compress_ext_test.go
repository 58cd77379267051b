package rpc_test

import (
	"bytes"
	"context"
	"net/http"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	dictv1 "github.com/lbpay-lab/core-dict/rpc/dict/v1"
)

// TestResponsesCompressedFromOneKiB: a client that accepts gzip gets small
// answers (one key) as they are and large ones (a page of keys)
// compressed.
func TestResponsesCompressedFromOneKiB(t *testing.T) {
	t.Parallel()
	c := client(t, partA)
	acc := account(partA)
	owner := legalOwner(newCNPJ(false))
	var keys []string
	for range 6 {
		e := mustCreate(t, c, createReq(dictv1.KeyType_KEY_TYPE_EMAIL, newEmail(), acc, owner))
		keys = append(keys, e.GetKey())
	}
	post := func(procedure string, msg proto.Message) (encoding string, size int) {
		t.Helper()
		body, err := protojson.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		req, err := http.NewRequestWithContext(context.Background(), http.MethodPost,
			env.server.URL+"/dict.v1.CoreDictService/"+procedure, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept-Encoding", "gzip")
		req.Header.Set("Authorization", "Bearer "+token(t, partA))
		// DisableCompression: the transport neither asks for gzip nor
		// decodes it, so the test sees what the server sent.
		hc := &http.Client{Transport: &http.Transport{DisableCompression: true}}
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(res.Body)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("%s: HTTP %d: %s", procedure, res.StatusCode, buf.String())
		}
		return res.Header.Get("Content-Encoding"), buf.Len()
	}
	if enc, n := post("GetKey", &dictv1.GetKeyRequest{Key: keys[0]}); enc != "" {
		t.Errorf("GetKey (one key) answered with Content-Encoding %q (%d bytes), want none", enc, n)
	}
	if enc, n := post("ListKeys", &dictv1.ListKeysRequest{Account: acc}); enc != "gzip" {
		t.Errorf("ListKeys (6 keys) answered with Content-Encoding %q (%d bytes), want gzip", enc, n)
	}
}
