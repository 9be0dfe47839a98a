# The fake IBKR server and the vector helpers are Erlang test modules of the
# package (test/*.erl); compile them here so ExUnit can use them.
erl_test_dir = Path.expand("../..", __DIR__)
out = Path.join(System.tmp_dir!(), "ibkr_oauth_exunit_#{System.unique_integer([:positive])}")
File.mkdir_p!(out)

for mod <- ~w(ibkr_test_lib ibkr_server_crypto ibkr_fake_json ibkr_fake_api ibkr_fake_ws ibkr_fake_server) do
  src = Path.join(erl_test_dir, mod <> ".erl") |> String.to_charlist()
  {:ok, _} = :compile.file(src, [:debug_info, {:outdir, String.to_charlist(out)}, :report])
end

Code.prepend_path(out)
{:ok, _} = Application.ensure_all_started(:ibkr_oauth)
ExUnit.start()
