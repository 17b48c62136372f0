package dnsclient_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// TestNothingAsksTheSystemResolver fails loudly when any package of the
// module (tests included) resolves a name through Go's built-in resolver,
// which reads /etc/resolv.conf: every lookup must go through a
// dnsclient.Resolver built from dns_servers. Libraries that default to it
// (go-msgauth's dkim/dmarc, blitiri spf) must be given a lookup function
// that uses the project's resolver.
func TestNothingAsksTheSystemResolver(t *testing.T) {
	banned := map[string]bool{
		"LookupHost": true, "LookupIP": true, "LookupAddr": true, "LookupMX": true, "LookupTXT": true,
		"LookupCNAME": true, "LookupSRV": true, "LookupNS": true, "LookupPort": true, "DefaultResolver": true, "Resolver": true,
	}
	fset := token.NewFileSet()
	checked := 0
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != ".." && (strings.HasPrefix(name, ".") || name == "testdata" || name == "dev-cluster") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		checked++
		netName := ""
		for _, imp := range f.Imports {
			if imp.Path.Value == `"net"` {
				netName = "net"
				if imp.Name != nil {
					netName = imp.Name.Name
				}
			}
		}
		if netName == "" {
			return nil
		}
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); ok && x.Name == netName && banned[sel.Sel.Name] {
				t.Errorf("%s: net.%s asks the system's resolver; use the node's dnsclient.Resolver (dns_servers)", fset.Position(sel.Pos()), sel.Sel.Name)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 100 {
		t.Fatalf("checked only %d files: is the walk rooted at the module?", checked)
	}
}
