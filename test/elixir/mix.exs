# An Elixir project that uses ibkr_oauth the way an application would: as a
# path dependency compiled by Debian's rebar3 (MIX_REBAR3), offline.
defmodule IbkrOauthElixirTest.MixProject do
  use Mix.Project

  def project do
    [
      app: :ibkr_oauth_elixir_test,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: false,
      deps: [{:ibkr_oauth, path: "../..", manager: :rebar3}]
    ]
  end

  def application do
    [extra_applications: [:logger, :crypto, :public_key, :ssl, :inets]]
  end
end
