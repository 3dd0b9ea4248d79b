package hierarchy

import (
	"strings"
	"testing"
)

func TestPatternsMatchAndContain(t *testing.T) {
	for _, c := range []struct {
		pattern Pattern
		repo    string
		want    bool
	}{
		{"team/*", "team/app", true},
		{"team/*", "team/app/sub", true},
		{"team/*", "teamx/app", false},
		{"team/app", "team/app", true},
		{"team/app", "team/app/sub", false},
		{"*", "anything/at/all", true},
		{"team/a*", "team/app", true},
	} {
		if got := c.pattern.Matches(c.repo); got != c.want {
			t.Errorf("%q matches %q = %v, want %v", c.pattern, c.repo, got, c.want)
		}
	}
	parent := Scope{"team/*", "base/alpine"}
	for _, c := range []struct {
		child     Scope
		uncovered string
	}{
		{Scope{"team/app"}, ""},
		{Scope{"team/*"}, ""},
		{Scope{"team/line1/*"}, ""},
		{Scope{"base/alpine"}, ""},
		{Scope{"base/*"}, "base/*"},
		{Scope{"*"}, "*"},
		{Scope{"other/x", "team/y"}, "other/x"},
	} {
		got := joinPatterns(parent.Uncovered(c.child))
		if got != c.uncovered {
			t.Errorf("Uncovered(%v) = %q, want %q", c.child, got, c.uncovered)
		}
	}
	for _, bad := range []Pattern{"", "Team/*", "team/**", "*/app", "team/", "team//app", "a*b"} {
		if err := bad.Validate(); err == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
}

func TestConnectionStringRoundTripAndErrors(t *testing.T) {
	cs := ConnectionString{NodeName: "siteone", SyncTokenName: "siteone-sync", SyncTokenPassword: "s3cret-value",
		ParentGateway: "10.0.0.1:4222", ParentProtocol: "http", ParentRegistry: "10.0.0.1:5000"}
	got, err := ParseConnectionString(cs.String())
	if err != nil || got != cs {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for s, want := range map[string]string{
		"ConnectedRegistryName=siteone":                       "missing ParentEndpointProtocol",
		strings.Replace(cs.String(), "http;", "ftp;", 1):      `ParentEndpointProtocol "ftp"`,
		cs.String() + ";Colour=blue":                          `unknown key "Colour"`,
		strings.Replace(cs.String(), "siteone;", "ab;", 1):    "ConnectedRegistryName",
		"garbage-without-equals-sign-" + cs.SyncTokenPassword: "is not Key=Value",
	} {
		_, err := ParseConnectionString(s)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseConnectionString(%q) = %v, want %q", s, err, want)
		}
		if err != nil && strings.Contains(err.Error(), cs.SyncTokenPassword) {
			t.Errorf("error repeats the password: %v", err)
		}
	}
}

func TestSyncTokenVerifiesEitherPassword(t *testing.T) {
	var tok Passwords
	h1, _ := HashPassword("one", zeroTime)
	tok.Password1 = h1
	if !tok.Verify("one") || tok.Verify("two") || tok.Verify("") {
		t.Fatal("password 1")
	}
	h2, _ := HashPassword("two", zeroTime)
	tok.Password2 = h2
	if !tok.Verify("one") || !tok.Verify("two") {
		t.Fatal("both passwords must work side by side")
	}
	if strings.Contains(string(h1.Hash), "one") {
		t.Fatal("hash holds the password")
	}
}
