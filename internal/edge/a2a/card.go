package a2a

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/problem"
)

// The security scheme names in corral's cards.
const (
	schemeBearer = "corral"
	schemeOAuth  = "corral-oauth"
)

// card is an agent's card. The public card says what the agent is for
// (its description) and how to reach it; the extended card, for callers
// with a corral credential, adds skills from its instructions and tools.
// Instructions are a system prompt: they are never in the public card.
func (s *Server) card(base, name string, spec *config.AgentSpec, extended bool) AgentCard {
	desc := spec.Description
	if desc == "" {
		desc = "corral agent " + name
	}
	c := AgentCard{
		Name:        name,
		Description: desc,
		SupportedInterfaces: []AgentInterface{{
			URL: base + "/a2a/" + name, ProtocolBinding: bindingJSONRPC, ProtocolVersion: Version,
		}},
		Provider:         &AgentProvider{Organization: "corral", URL: base},
		Version:          s.opts.Version,
		DocumentationURL: "https://corral.dev/docs/a2a",
		Capabilities: AgentCapabilities{
			Streaming: true, PushNotifications: s.push != nil, ExtendedAgentCard: true,
			Extensions: []AgentExtension{{
				URI:         ChainExtension,
				Description: "corral's chain of calls: message metadata key " + ChainKey + " holds the agents above this call, outermost first (a JSON array of names). A message whose chain already holds the agent is refused (agent_cycle), one " + itoa(MaxDepth) + " agents deep too (agent_depth). corral sets it on every message it sends.",
				Params:      map[string]any{"metadataKey": ChainKey, "maxDepth": MaxDepth},
			}},
		},
		SecuritySchemes: map[string]SecurityScheme{
			schemeBearer: {HTTPAuth: &HTTPAuthSecurityScheme{Scheme: "Bearer", Description: "A corral credential: the agent's API key (ck_...), a corral token (JWT from /oauth2/token), or the admin token."}},
			schemeOAuth: {OAuth2: &OAuth2SecurityScheme{
				Description:       "corral tokens by the client_credentials grant (client_id: the agent, client_secret: its key).",
				Flows:             OAuthFlows{ClientCredentials: &ClientCredentialsFlow{TokenURL: base + "/oauth2/token", Scopes: map[string]string{}}},
				OAuth2MetadataURL: base + "/.well-known/oauth-authorization-server",
			}},
		},
		SecurityRequirements: []SecurityRequirement{
			{Schemes: map[string]StringList{schemeBearer: {List: []string{}}}},
			{Schemes: map[string]StringList{schemeOAuth: {List: []string{}}}},
		},
		DefaultInputModes:  []string{"text/plain", "application/json"},
		DefaultOutputModes: []string{"text/plain", "application/json"},
		Skills:             []AgentSkill{{ID: name, Name: name, Description: desc, Tags: []string{"corral"}}},
	}
	if spec.A2A != nil {
		c.Skills[0].Tags = append(c.Skills[0].Tags, "remote")
	}
	if !extended {
		return c
	}
	if ins := firstParagraph(spec.Instructions, 1000); ins != "" {
		c.Skills[0].Description = desc + "\n\n" + ins
	}
	for _, tool := range spec.Tools {
		c.Skills = append(c.Skills, AgentSkill{ID: name + "/" + tool, Name: tool, Description: "uses the tool " + tool + " through corral", Tags: []string{"tool"}})
	}
	return c
}

// firstParagraph is the first paragraph of s, at most n bytes (on a rune
// boundary).
func firstParagraph(s string, n int) string {
	s = strings.TrimSpace(s)
	if i := strings.Index(s, "\n\n"); i >= 0 {
		s = s[:i]
	}
	if len(s) > n {
		s = strings.ToValidUTF8(s[:n], "") + "..."
	}
	return s
}

// serveCard serves an agent's card: public, or extended when the request
// carries a valid corral credential.
func (s *Server) serveCard(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("agent")
	spec, ok := s.agent(name)
	if !ok {
		return problem.New(http.StatusNotFound, problem.ResourceNotFound, "no A2A agent "+truncate(name, 80)+" here")
	}
	extended := false
	if r.Header.Get("Authorization") != "" {
		if _, err := s.authenticate(r); err != nil {
			return err
		}
		extended = true
	}
	return s.writeCard(w, r, s.card(s.baseURL(r), name, spec, extended), extended)
}

func (s *Server) writeCard(w http.ResponseWriter, r *http.Request, v any, private bool) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(b)
	etag := `"` + hex.EncodeToString(sum[:8]) + `"`
	w.Header().Set("ETag", etag)
	if private {
		w.Header().Set("Cache-Control", "private, max-age=60")
	} else {
		w.Header().Set("Cache-Control", "public, max-age=60")
	}
	w.Header().Set("Vary", "Authorization")
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	w.Header().Set("Content-Type", "application/json")
	_, err = w.Write(append(b, '\n'))
	return err
}

// Directory is the answer of GET /a2a/: the cards of every A2A agent here.
type Directory struct {
	Agents []AgentCard `json:"agents"`
}

// serveDirectory lists the public cards of the agents corral serves over
// A2A, by name.
func (s *Server) serveDirectory(w http.ResponseWriter, r *http.Request) error {
	base := s.baseURL(r)
	out := Directory{Agents: []AgentCard{}}
	for _, res := range s.resources.List("Agent") {
		var spec config.AgentSpec
		if json.Unmarshal(res.Spec, &spec) != nil || !served(&spec) {
			continue
		}
		out.Agents = append(out.Agents, s.card(base, res.Metadata.Name, &spec, false))
	}
	slices.SortFunc(out.Agents, func(a, b AgentCard) int { return strings.Compare(a.Name, b.Name) })
	return s.writeCard(w, r, out, false)
}
