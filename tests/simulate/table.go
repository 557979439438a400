package simulate

import (
	"fmt"
	"regexp"
	"strings"
)

var ipv4 = regexp.MustCompile(`(\d{1,3}\.){3}\d{1,3}`)

// stable replaces the addresses in a text by what they are (pod or Service), so that the table does
// not change with the addresses a cluster happens to assign.
func (w *World) stable(text string) string {
	return ipv4.ReplaceAllStringFunc(text, func(ip string) string {
		name := w.Describe(ip)
		if name == ip {
			return ip
		}
		return "⟨" + name + "⟩"
	})
}

func cell(s string) string {
	if s == "" {
		return "–"
	}
	return strings.ReplaceAll(s, "|", `\|`)
}

// HopRows renders one routing mode's walk as Markdown table rows.
func (w *World) HopRows(wk *Walk) []string {
	var rows []string
	for _, h := range wk.Hops {
		where, rc, cl, up, hostPath, tls := "", "", "", "", "", ""
		if m := h.Match; m != nil {
			parts := []string{}
			if m.ListenerMatched != "" {
				parts = append(parts, "listener `"+m.ListenerMatched+"`")
			}
			if m.FilterChainMatched != "" {
				parts = append(parts, "filter chain `"+m.FilterChainMatched+"`")
			}
			where = strings.Join(parts, ", ")
			if m.VirtualHostMatched != "" {
				rc = fmt.Sprintf("`%s` / `%s` / `%s`", m.RouteConfigMatched, m.VirtualHostMatched, m.RouteMatched)
			}
			if m.ClusterMatched != "" {
				cl = "`" + m.ClusterMatched + "`"
			}
			if m.Error == nil && m.Upstream != "" {
				up = w.Describe(m.Upstream)
				tls = m.TLS
				if m.HTTP2 {
					tls += ", HTTP/2"
				}
				if m.VirtualHostMatched != "" {
					hostPath = m.Host + " " + m.Path
				}
			}
		}
		result := "passes"
		if !h.OK {
			result = "**fails**: " + h.Reason
		}
		if len(h.Detail) > 0 {
			result += " (" + strings.Join(h.Detail, "; ") + ")"
		}
		row := []string{wk.Routing, h.ID, h.Title, h.Call, where, rc, cl, up, hostPath, tls, result}
		for i := range row {
			row[i] = cell(w.stable(row[i]))
		}
		rows = append(rows, "| "+strings.Join(row, " | ")+" |")
	}
	return rows
}

// HopTableHeader is the header of the hop table.
const HopTableHeader = "| walk | hop | Envoy | what arrives | listener, filter chain | route configuration / virtual host / route | cluster | sent to | Host and path upstream | TLS upstream | result |\n" +
	"|---|---|---|---|---|---|---|---|---|---|---|"
