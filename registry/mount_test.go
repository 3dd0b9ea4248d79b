package registry

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"testing"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
)

// mountEnv is a registry with a secret blob in secret/app, an owner who may do
// anything, and an attacker who may pull and push team/* only.
type mountEnv struct {
	tr     *testRegistry
	secret digest.Digest
	// authz are the attacker's two credentials: a password and a registry token
	// asked for team/app, team/other and secret/app (it gets the first two).
	authz map[string]string
}

const ownerAuthz = "Basic b3duZXI6cHctb3duZXI=" // owner:pw-owner

func startMountEnv(t *testing.T) *mountEnv {
	t.Helper()
	auth := &staticAuth{users: map[string]Principal{
		"owner":    {User: "owner", Admin: true},
		"attacker": {User: "attacker", Actions: pushOn("team/")},
	}}
	tr := startRegistryIn(t, t.TempDir(), ReadWrite, func(c *Config) { c.Auth = auth })
	e := &mountEnv{tr: tr, secret: e2ePushBlob(t, tr, "secret/app", ownerAuthz)}
	req, _ := http.NewRequest(http.MethodGet, tr.URL+TokenPath+"?service=testnode&scope=repository:team/app:pull,push&scope=repository:team/other:pull&scope=repository:secret/app:pull", nil)
	req.SetBasicAuth("attacker", "pw-attacker")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Token == "" {
		t.Fatalf("attacker's registry token: %s %v", resp.Status, err)
	}
	e.authz = map[string]string{"password": "Basic YXR0YWNrZXI6cHctYXR0YWNrZXI=", "token": "Bearer " + body.Token}
	return e
}

func pushOn(prefix string) func(string) []string {
	return func(repo string) []string {
		if strings.HasPrefix(repo, prefix) {
			return []string{"pull", "push"}
		}
		return nil
	}
}

// e2ePushBlob uploads random bytes to repo (POST, then a monolithic PUT).
func e2ePushBlob(t *testing.T, tr *testRegistry, repo, authz string) digest.Digest {
	t.Helper()
	data := make([]byte, 512)
	_, _ = rand.Read(data)
	d := digest.FromBytes(data)
	resp := tr.send(t, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", authz, "", nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload to %s: %s %s", repo, resp.Status, ociMessage(resp))
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	if resp := tr.send(t, http.MethodPut, loc.RequestURI(), authz, "application/octet-stream", data); resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload to %s: %s %s", repo, resp.Status, ociMessage(resp))
	}
	return d
}

func (tr *testRegistry) send(t testing.TB, method, path, authz, contentType string, body []byte) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, tr.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// linked reports whether repo links blob d, read from storage, and asks the
// attacker's and the owner's HEAD.
func (e *mountEnv) linked(t *testing.T, repo string, d digest.Digest, authz string) []string {
	t.Helper()
	var where []string
	_, err := e.tr.driver.Stat(context.Background(), layerAliasLink(repo, d))
	switch {
	case err == nil:
		where = append(where, "storage has the link")
	case !errors.As(err, new(storagedriver.PathNotFoundError)):
		t.Fatalf("stat link: %v", err)
	}
	for who, a := range map[string]string{"attacker": authz, "owner": ownerAuthz} {
		if resp := e.tr.send(t, http.MethodHead, "/v2/"+repo+"/blobs/"+d.String(), a, "", nil); resp.StatusCode != http.StatusNotFound {
			where = append(where, who+"'s HEAD answers "+resp.Status)
		}
	}
	return where
}

func multipartBody(t *testing.T, fields map[string]string) (string, []byte) {
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for k, v := range fields {
		if err := mw.WriteField(k, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return mw.FormDataContentType(), b.Bytes()
}

// TestMountFromAForbiddenRepositoryNeverLinks: a cross-repository mount reads from
// a repository, so its from must be one the caller may pull, however the request
// spells it (query, form body, both, twice, other cases, other encodings). No
// variant links the secret blob into the attacker's repository; each refusal says
// why, and the rest start an ordinary upload, as the spec allows.
func TestMountFromAForbiddenRepositoryNeverLinks(t *testing.T) {
	e := startMountEnv(t)
	d := e.secret.String()
	form := "application/x-www-form-urlencoded"
	mpType, mpBody := multipartBody(t, map[string]string{"mount": d, "from": "secret/app"})
	for _, c := range []struct {
		name, query, contentType, body string
		raw                            []byte
		// want is the refusal's message; empty: an ordinary upload starts (202).
		want string
	}{
		{name: "from in the query", query: "mount=" + d + "&from=secret/app"},
		{name: "from in the form body", query: "mount=" + d, contentType: form, body: "from=secret/app",
			want: "a form body (Content-Type application/x-www-form-urlencoded) is not accepted"},
		{name: "mount and from in the form body", contentType: form, body: "mount=" + d + "&from=secret/app",
			want: "a form body (Content-Type application/x-www-form-urlencoded) is not accepted"},
		{name: "form body with a charset", query: "mount=" + d, contentType: form + "; charset=utf-8", body: "from=secret/app",
			want: "a form body (Content-Type application/x-www-form-urlencoded) is not accepted"},
		{name: "form body type in capitals", query: "mount=" + d, contentType: "Application/X-WWW-Form-URLEncoded", body: "from=secret/app",
			want: "a form body (Content-Type application/x-www-form-urlencoded) is not accepted"},
		{name: "allowed from in the query, forbidden in the body", query: "mount=" + d + "&from=team/other", contentType: form,
			body: "from=secret/app", want: "is not accepted"},
		{name: "forbidden from in the query, allowed in the body", query: "mount=" + d + "&from=secret/app", contentType: form,
			body: "from=team/other", want: "is not accepted"},
		{name: "multipart body", query: "mount=" + d, contentType: mpType, raw: mpBody,
			want: "a form body (Content-Type multipart/form-data) is not accepted"},
		{name: "from twice in the query, allowed first", query: "mount=" + d + "&from=team/other&from=secret/app",
			want: `query parameter "from" given 2 times`},
		{name: "from twice in the query, forbidden first", query: "mount=" + d + "&from=secret/app&from=team/other",
			want: `query parameter "from" given 2 times`},
		{name: "mount twice", query: "mount=" + d + "&mount=" + d + "&from=secret/app", want: `query parameter "mount" given 2 times`},
		{name: "keys in other cases", query: "Mount=" + d + "&From=secret/app&MOUNT=" + d + "&FROM=secret/app"},
		{name: "lowercase mount, capital From", query: "mount=" + d + "&From=secret/app"},
		{name: "percent-encoded key and value", query: "mount=" + d + "&%66rom=secret%2Fapp"},
		{name: "a form body without a Content-Type", query: "mount=" + d, body: "from=secret/app"},
	} {
		for kind, authz := range e.authz {
			t.Run(c.name+" with a "+kind, func(t *testing.T) {
				body := c.raw
				if body == nil && c.body != "" {
					body = []byte(c.body)
				}
				path := "/v2/team/app/blobs/uploads/"
				if c.query != "" {
					path += "?" + c.query
				}
				resp := e.tr.send(t, http.MethodPost, path, authz, c.contentType, body)
				msg := ociMessage(resp)
				switch {
				case c.want == "" && resp.StatusCode != http.StatusAccepted:
					t.Errorf("%s, %s: want 202, an ordinary upload", resp.Status, msg)
				case c.want != "" && (resp.StatusCode != http.StatusBadRequest || !strings.Contains(msg, c.want)):
					t.Errorf("%s, %s: want 400 saying %q", resp.Status, msg, c.want)
				}
				if where := e.linked(t, "team/app", e.secret, authz); len(where) > 0 {
					t.Fatalf("the secret blob was mounted into team/app: %s", strings.Join(where, "; "))
				}
			})
		}
	}

	// Controls: the same mount from a repository the caller may pull links it, so
	// the refusals above are the check's doing and not a broken mount.
	shared := e2ePushBlob(t, e.tr, "team/other", ownerAuthz)
	resp := e.tr.send(t, http.MethodPost, "/v2/team/app/blobs/uploads/?mount="+shared.String()+"&from=team/other", e.authz["token"], "", nil)
	if resp.StatusCode != http.StatusCreated || len(e.linked(t, "team/app", shared, e.authz["token"])) != 3 {
		t.Errorf("control: a mount from team/other: %s %s, linked %v; want 201 and the link", resp.Status, ociMessage(resp), e.linked(t, "team/app", shared, e.authz["token"]))
	}
	resp = e.tr.send(t, http.MethodPost, "/v2/team/owned/blobs/uploads/?mount="+d+"&from=secret/app", ownerAuthz, "", nil)
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("control: the owner's mount from secret/app: %s %s, want 201", resp.Status, ociMessage(resp))
	}
}

// TestUploadBodiesAreNeverReadAsForms: a blob whose bytes look like a form, sent with
// a form Content-Type, is stored as those bytes (distribution's FormValue would have
// consumed them as parameters); a closing PUT that repeats digest is refused.
func TestUploadBodiesAreNeverReadAsForms(t *testing.T) {
	tr := startRegistry(t, ReadWrite)
	data := []byte("from=secret/app&mount=sha256:0000&digest=sha256:1111")
	d := digest.FromBytes(data)
	start := func() *url.URL {
		resp := tr.send(t, http.MethodPost, "/v2/team/app/blobs/uploads/", "", "", nil)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("start upload: %s %s", resp.Status, ociMessage(resp))
		}
		loc, err := url.Parse(resp.Header.Get("Location"))
		if err != nil {
			t.Fatal(err)
		}
		return loc
	}
	loc := start()
	q := loc.Query()
	q.Add("digest", d.String())
	q.Add("digest", digest.FromString("other").String())
	loc.RawQuery = q.Encode()
	resp := tr.send(t, http.MethodPut, loc.RequestURI(), "", "application/octet-stream", data)
	if msg := ociMessage(resp); resp.StatusCode != http.StatusBadRequest || !strings.Contains(msg, `query parameter "digest" given 2 times`) {
		t.Errorf("PUT with two digests: %s %s, want 400 saying digest is given twice", resp.Status, msg)
	}

	loc = start()
	q = loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	resp = tr.send(t, http.MethodPut, loc.RequestURI(), "", "application/x-www-form-urlencoded", data)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT of form-like bytes with a form Content-Type: %s %s, want 201", resp.Status, ociMessage(resp))
	}
	resp = tr.send(t, http.MethodGet, "/v2/team/app/blobs/"+d.String(), "", "", nil)
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, data) {
		t.Errorf("GET the blob: %s %q, want 200 %q", resp.Status, got, data)
	}
}
