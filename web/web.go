// Package web serves core-dict's browser console: the single-page app built
// from web/src into web/dist/console (`make web`), embedded in the binary
// and served at / on the API port, next to the RPC paths.
//
// A binary built before the console (a fresh clone, `go build` alone)
// serves a page at / that says how to build it; everything else works.
package web

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed dist
var dist embed.FS

// Built reports whether the binary embeds a built console.
func Built() bool {
	_, err := fs.Stat(dist, "dist/console/index.html")
	return err == nil
}

// contentSecurityPolicy lets the console load only its own files and talk
// only to its own origin.
const contentSecurityPolicy = "default-src 'self'; connect-src 'self'; img-src 'self' data:; " +
	"style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"

// Handler serves the console for GET and HEAD requests (404 for any other
// method, as for an unknown procedure): its files by path,
// index.html for every path that names no file (the app's own routes), and
// 404 for a missing file with an extension. Hashed files under /assets/
// are cached for a year; index.html is revalidated every time.
func Handler() http.Handler {
	root, err := fs.Sub(dist, "dist/console")
	if err != nil || !Built() {
		return http.HandlerFunc(notBuilt)
	}
	files := http.FileServerFS(root)
	index, err := fs.ReadFile(root, "index.html")
	if err != nil {
		return http.HandlerFunc(notBuilt)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
		if name != "" && name != "index.html" {
			if st, err := fs.Stat(root, name); err == nil && !st.IsDir() {
				if strings.HasPrefix(name, "assets/") {
					h.Set("Cache-Control", "public, max-age=31536000, immutable")
				} else {
					h.Set("Cache-Control", "no-cache")
				}
				files.ServeHTTP(w, r)
				return
			}
			if path.Ext(name) != "" {
				http.NotFound(w, r)
				return
			}
		}
		h.Set("Cache-Control", "no-cache")
		h.Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			w.Write(index)
		}
	})
}

func notBuilt(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write([]byte(notBuiltPage))
	}
}

const notBuiltPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>core-dict console</title></head>
<body><h1>core-dict console</h1>
<p>This binary was built without the console. Build it with <code>make web</code> (or <code>make run</code>),
then rebuild the binary.</p></body></html>
`
