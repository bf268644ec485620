package edge

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed client/herald.js client/index.html
var clientFS embed.FS

// ClientFiles serves the JavaScript client at /herald.js and the demo page
// at /.
func ClientFiles() http.Handler {
	sub, _ := fs.Sub(clientFS, "client") // the directory is embedded above
	files := http.FileServer(http.FS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
